# vault policy write kv-app examples/kv/policy.hcl
path "secret/data/app" {
  capabilities = ["read"]
}
