# rdsproxy server on Kubernetes, reached with `rdsproxy connect --via kube`.
#
# Flow: modules/server-config renders the YAML (ConfigMap) and the container
# arguments; the Deployment mounts the ConfigMap at /etc/rdsproxy and runs
# `server --config /etc/rdsproxy/server.yaml`. The client port listens on
# 127.0.0.1 inside the pod (port-forward connects to the pod's loopback, so
# nothing else in the cluster can reach it); the admin port listens on
# 0.0.0.0 so that the kubelet's HTTP probes, which dial the pod IP, work.

locals {
  config_dir  = "/etc/rdsproxy"
  config_file = "server.yaml"

  selector_labels = {
    "app.kubernetes.io/name"     = "rdsproxy"
    "app.kubernetes.io/instance" = var.name
  }
  labels = merge(var.labels, local.selector_labels, {
    "app.kubernetes.io/component"  = "server"
    "app.kubernetes.io/managed-by" = "terraform"
  })

  namespace = var.create_namespace ? kubernetes_namespace_v1.this[0].metadata[0].name : var.namespace
}

module "config" {
  source = "../server-config"

  listen           = "127.0.0.1:${var.port}"
  admin_addr       = "0.0.0.0:${var.admin_port}"
  regions          = var.regions
  allow_tags       = var.allow_tags
  deny_tags        = var.deny_tags
  refresh_interval = var.refresh_interval
  static_targets   = var.static_targets
  max_sessions     = var.max_sessions
  require_identity = var.require_identity
  revoke_sessions  = var.revoke_sessions
  startup_timeout  = var.startup_timeout
  dial_timeout     = var.dial_timeout
  max_startup_size = var.max_startup_size
  drain_timeout    = var.drain_timeout
  log_format       = var.log_format
  log_level        = var.log_level
  server_id        = var.name
  config_path      = "${local.config_dir}/${local.config_file}"
}

resource "kubernetes_namespace_v1" "this" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name = var.namespace
    labels = merge(var.labels, {
      "pod-security.kubernetes.io/enforce" = "restricted"
    })
  }
}

resource "kubernetes_service_account_v1" "this" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
    annotations = merge(
      var.service_account_annotations,
      var.iam_role_arn == null ? {} : { "eks.amazonaws.com/role-arn" = var.iam_role_arn },
    )
  }

  automount_service_account_token = false
}

resource "kubernetes_config_map_v1" "this" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }

  data = {
    (local.config_file) = module.config.server_yaml
  }
}

resource "kubernetes_deployment_v1" "this" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    replicas               = var.replicas
    revision_history_limit = 5

    selector {
      match_labels = local.selector_labels
    }

    strategy {
      type = "RollingUpdate"

      rolling_update {
        max_unavailable = "0"
        max_surge       = "1"
      }
    }

    template {
      metadata {
        labels = local.labels
        annotations = {
          # Roll the pods when the configuration changes.
          "rdsproxy.io/config-sha256" = sha256(module.config.server_yaml)
        }
      }

      spec {
        service_account_name             = kubernetes_service_account_v1.this.metadata[0].name
        automount_service_account_token  = false
        enable_service_links             = false
        termination_grace_period_seconds = module.config.drain_timeout_seconds + 10
        node_selector                    = var.node_selector

        dynamic "image_pull_secrets" {
          for_each = var.image_pull_secrets

          content {
            name = image_pull_secrets.value
          }
        }

        security_context {
          run_as_non_root = true
          run_as_user     = 65532
          run_as_group    = 65532

          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        topology_spread_constraint {
          max_skew           = 1
          topology_key       = "kubernetes.io/hostname"
          when_unsatisfiable = "ScheduleAnyway"

          label_selector {
            match_labels = local.selector_labels
          }
        }

        container {
          name              = "rdsproxy"
          image             = var.image
          image_pull_policy = var.image_pull_policy
          command           = var.command
          args              = module.config.args

          # Informational: the client port is bound to 127.0.0.1 and reached
          # only through port-forward.
          port {
            name           = "postgres"
            container_port = var.port
          }

          port {
            name           = "admin"
            container_port = var.admin_port
          }

          readiness_probe {
            http_get {
              path = "/readyz"
              port = "admin"
            }
            period_seconds    = 5
            timeout_seconds   = 6 # past the admin listener's 5 s header timeout: clients holding all its 64 connections delay a probe, not fail it
            failure_threshold = 2
          }

          liveness_probe {
            http_get {
              path = "/healthz"
              port = "admin"
            }
            initial_delay_seconds = 5
            period_seconds        = 10
            timeout_seconds       = 6 # as the readiness probe's
            failure_threshold     = 3
          }

          resources {
            requests = var.resources.requests
            limits   = var.resources.limits
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            run_as_non_root            = true
            privileged                 = false

            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "config"
            mount_path = local.config_dir
            read_only  = true
          }
        }

        volume {
          name = "config"

          config_map {
            name = kubernetes_config_map_v1.this.metadata[0].name

            items {
              key  = local.config_file
              path = local.config_file
            }
          }
        }
      }
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "this" {
  count = var.replicas > 1 ? 1 : 0

  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    min_available = "1"

    selector {
      match_labels = local.selector_labels
    }
  }
}

# Ingress: the admin port from the configured namespaces/pods only (or from
# nowhere); the client port from nowhere (port-forward reaches 127.0.0.1
# inside the pod without crossing the pod network). Egress is left to the
# cluster: discovery needs the RDS and STS APIs, and Pod Identity a
# link-local agent, which differ per cluster.
locals {
  admin_ingress = length(var.admin_ingress_namespaces) + length(var.admin_ingress_pod_labels) > 0 ? [{
    namespaces = var.admin_ingress_namespaces
    pod_labels = var.admin_ingress_pod_labels
  }] : []
}

resource "kubernetes_network_policy_v1" "this" {
  count = var.create_network_policy ? 1 : 0

  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    policy_types = ["Ingress"]

    pod_selector {
      match_labels = local.selector_labels
    }

    dynamic "ingress" {
      for_each = local.admin_ingress

      content {
        ports {
          port     = tostring(var.admin_port)
          protocol = "TCP"
        }

        from {
          dynamic "namespace_selector" {
            for_each = length(ingress.value.namespaces) > 0 ? [ingress.value.namespaces] : []

            content {
              match_expressions {
                key      = "kubernetes.io/metadata.name"
                operator = "In"
                values   = namespace_selector.value
              }
            }
          }

          dynamic "pod_selector" {
            for_each = length(ingress.value.pod_labels) > 0 ? [ingress.value.pod_labels] : []

            content {
              match_labels = pod_selector.value
            }
          }
        }
      }
    }
  }
}
