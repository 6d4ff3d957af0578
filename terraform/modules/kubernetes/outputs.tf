output "namespace" {
  description = "Namespace of the server objects."
  value       = local.namespace
}

output "deployment_name" {
  description = "Name of the Deployment `rdsproxy connect --via kube` port-forwards to."
  value       = kubernetes_deployment_v1.this.metadata[0].name
}

output "pod_selector" {
  description = "Labels that select the server pods."
  value       = local.selector_labels
}

output "service_account_name" {
  description = "ServiceAccount of the pods (for an EKS Pod Identity association or an IRSA trust policy: system:serviceaccount:<namespace>:<name>)."
  value       = kubernetes_service_account_v1.this.metadata[0].name
}

output "port_forward_role_name" {
  description = "Role that grants port-forward to the server pods."
  value       = kubernetes_role_v1.port_forward.metadata[0].name
}

output "server_config" {
  description = "The rendered server.yaml in the ConfigMap (no secrets)."
  value       = module.config.server_yaml
}

output "iam_policy_json" {
  description = "Policy the pods' IAM role (IRSA or Pod Identity) needs: exactly rds:DescribeDBInstances and rds:DescribeDBClusters."
  value = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "DiscoverDatabases"
      Effect   = "Allow"
      Action   = ["rds:DescribeDBInstances", "rds:DescribeDBClusters"]
      Resource = "*"
    }]
  })
}
