# A Vault Agent / OpenBao Agent for every process of a host:
#   bao agent -config=examples/vault/agent.hcl     (or: vault agent -config=...)
# Connections with `agent: true` and `url: http://127.0.0.1:8100` then send no
# token; the agent adds its own. Adjust the address, role and file paths.
vault {
  address = "https://vault.example.com:8200"
}

auto_auth {
  # AppRole, logged in once by the agent (not by each process); the secret id
  # file is removed after reading unless remove_secret_id_file_after_reading = false.
  method "approle" {
    mount_path = "auth/approle"
    config = {
      role_id_file_path   = "/etc/vault-agent/role-id"
      secret_id_file_path = "/etc/vault-agent/secret-id"
    }
  }
}

# Caches tokens and leased (dynamic) secrets for the processes behind it.
cache {}

# Requests that carry no token get the agent's auto-auth token.
api_proxy {
  use_auto_auth_token = true
}

listener "tcp" {
  address     = "127.0.0.1:8100"
  tls_disable = true   # loopback only
}
