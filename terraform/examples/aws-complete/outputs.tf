output "server_name" {
  description = "Name to pass to `rdsproxy connect --via ssm` (instances are tagged rdsproxy:server=<name>)."
  value       = module.rdsproxy.name
}

output "autoscaling_group_name" {
  description = "Auto Scaling group of the server."
  value       = module.rdsproxy.autoscaling_group_name
}

output "ssm_document_name" {
  description = "Pass to `rdsproxy connect --via ssm --ssm-document`: the only session document the developer policy allows."
  value       = module.rdsproxy.ssm_document_name
}

output "developer_iam_policy_json" {
  description = "Attach this policy to the developers' role or permission set."
  value       = module.rdsproxy.developer_iam_policy_json
}

output "db_master_secret_arn" {
  description = "Secrets Manager secret with the example database's master password (for the example-admin target)."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "db_endpoint" {
  description = "Endpoint of the example database."
  value       = aws_db_instance.this.endpoint
}
