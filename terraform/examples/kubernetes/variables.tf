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
  description = "rdsproxy container image, pinned by digest (registry/rdsproxy@sha256:...); its entrypoint must be the rdsproxy binary."
  type        = string
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
