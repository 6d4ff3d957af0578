terraform {
  # 1.5: check blocks; optional() object attributes need 1.3.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Planned with 5.100.0 (plan_test.go); nothing here is newer than
      # 5.0, and no attribute that 6.x removes or deprecates is used.
      version = ">= 5.0"
    }
  }
}
