# vault policy write sync-app examples/sync/policy.hcl
path "secret/data/app" {
  capabilities = ["read"]
}
