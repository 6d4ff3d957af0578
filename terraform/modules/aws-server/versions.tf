terraform {
  # 1.5: check blocks; optional() object attributes need 1.3.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.0: data.aws_region exposes `region`.
      version = ">= 6.0"
    }
  }
}
