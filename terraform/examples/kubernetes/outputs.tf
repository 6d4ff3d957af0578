output "namespace" {
  description = "Namespace of the server."
  value       = module.rdsproxy.namespace
}

output "deployment_name" {
  description = "Deployment to pass to `rdsproxy connect --via kube`."
  value       = module.rdsproxy.deployment_name
}

output "service_account_name" {
  description = "ServiceAccount to trust in the IRSA role or to associate with EKS Pod Identity."
  value       = module.rdsproxy.service_account_name
}

output "iam_policy_json" {
  description = "Policy for the pods' IAM role."
  value       = module.rdsproxy.iam_policy_json
}
