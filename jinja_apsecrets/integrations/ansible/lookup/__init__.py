"""The first release's ``apsecret`` lookup, now a shim over ``apsecrets.core.secret``."""
