terraform {
  # optional() object attributes need 1.3.
  required_version = ">= 1.3.0"

  required_providers {
    kubernetes = {
      source = "hashicorp/kubernetes"
      # 2.20: the *_v1 resources used here, including pod_disruption_budget_v1.
      version = ">= 2.20"
    }
  }
}
