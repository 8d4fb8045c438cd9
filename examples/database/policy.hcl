# vault policy write db-app examples/database/policy.hcl
path "database/creds/app" {
  capabilities = ["read"]
}
