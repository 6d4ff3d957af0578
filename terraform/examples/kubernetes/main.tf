# rdsproxy server in its own namespace on an EKS cluster (any cluster whose
# pods can reach RDS works). `terraform apply` here is the integration test
# of modules/kubernetes.

provider "kubernetes" {
  config_path    = var.kubeconfig_path
  config_context = var.kube_context
}

module "rdsproxy" {
  source = "../../modules/kubernetes"

  name             = "rdsproxy"
  namespace        = "rdsproxy"
  create_namespace = true
  image            = var.image
  iam_role_arn     = var.iam_role_arn
  regions          = var.regions

  port_forward_groups = [var.developer_group]

  # The default NetworkPolicy admits only these pods, only on the admin port.
  admin_ingress_namespaces = var.prometheus_namespaces
  admin_ingress_pod_labels = { "app.kubernetes.io/name" = "prometheus" }
}
