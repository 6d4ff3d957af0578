variable "kubeconfig_path" {
  description = "Path of the kubeconfig file for the target cluster."
  type        = string
  default     = "~/.kube/config"
}

variable "kube_context" {
  description = "kubeconfig context of the target cluster (null: the current context)."
  type        = string
  default     = null
}

variable "image" {
  description = "rdsproxy container image; pin the release image by digest (ghcr.io/rdsproxy/rdsproxy@sha256:...)."
  type        = string
  default     = "ghcr.io/rdsproxy/rdsproxy:v1.0.0"
}

variable "prometheus_namespaces" {
  description = "Namespaces whose Prometheus pods (app.kubernetes.io/name=prometheus) may scrape /metrics; the NetworkPolicy admits nothing else."
  type        = list(string)
  default     = ["monitoring"]
}

variable "iam_role_arn" {
  description = "IRSA role for the server pods, granting rds:DescribeDBInstances and rds:DescribeDBClusters (the module's iam_policy_json output). null when using EKS Pod Identity."
  type        = string
  default     = null
}

variable "regions" {
  description = "Regions in which the server discovers databases."
  type        = list(string)
  default     = ["eu-west-1"]
}

variable "developer_group" {
  description = "Kubernetes group whose members may port-forward to the server."
  type        = string
  default     = "rdsproxy-developers"
}
