# Who may reach the server: port-forward to its pods in this namespace. That
# is all a developer's Kubernetes identity needs; database access is still
# decided by RDS on the developer's own IAM token.

resource "kubernetes_role_v1" "port_forward" {
  metadata {
    name      = "${var.name}-port-forward"
    namespace = local.namespace
    labels    = local.labels
  }

  # Resolve the Deployment's selector.
  rule {
    api_groups     = ["apps"]
    resources      = ["deployments"]
    resource_names = [var.name]
    verbs          = ["get"]
  }

  # List the ready pods, check one that failed, and watch them so that a
  # rollout is followed at once.
  rule {
    api_groups = [""]
    resources  = ["pods"]
    verbs      = ["get", "list", "watch"]
  }

  # SPDY port-forward is a POST (create); the WebSocket upgrade is a GET
  # (get), and recent API servers also require create for it.
  rule {
    api_groups = [""]
    resources  = ["pods/portforward"]
    verbs      = ["get", "create"]
  }
}

resource "kubernetes_role_binding_v1" "port_forward" {
  count = length(var.port_forward_groups) + length(var.port_forward_users) > 0 ? 1 : 0

  metadata {
    name      = "${var.name}-port-forward"
    namespace = local.namespace
    labels    = local.labels
  }

  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.port_forward.metadata[0].name
  }

  dynamic "subject" {
    for_each = var.port_forward_groups

    content {
      api_group = "rbac.authorization.k8s.io"
      kind      = "Group"
      name      = subject.value
    }
  }

  dynamic "subject" {
    for_each = var.port_forward_users

    content {
      api_group = "rbac.authorization.k8s.io"
      kind      = "User"
      name      = subject.value
    }
  }
}
