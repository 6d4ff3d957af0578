variable "region" {
  description = "AWS region of the example (VPC, database and server)."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name of the server and prefix of the example's resources."
  type        = string
  default     = "rdsproxy-example"
}

variable "binary_path" {
  description = "Local path of a linux/arm64 rdsproxy binary (GOOS=linux GOARCH=arm64 go build -o rdsproxy-linux-arm64 .); it is uploaded to a private S3 bucket."
  type        = string
  default     = "../../../bin/rdsproxy-linux-arm64"
}

variable "developer_db_user" {
  description = "Database user that the developer policy may connect as with IAM (create it with GRANT rds_iam)."
  type        = string
  default     = "app_reader"
}
