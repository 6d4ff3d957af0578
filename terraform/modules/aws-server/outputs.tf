output "name" {
  description = "The server name; instances carry the tag rdsproxy:server=<name>."
  value       = var.name
}

output "server_tag" {
  description = "The EC2 tag that identifies this server's instances."
  value       = { "rdsproxy:server" = var.name }
}

output "security_group_id" {
  description = "The server's security group (no ingress; egress to the databases and HTTPS)."
  value       = aws_security_group.this.id
}

output "autoscaling_group_name" {
  description = "Name of the Auto Scaling group."
  value       = aws_autoscaling_group.this.name
}

output "launch_template_id" {
  description = "ID of the launch template."
  value       = aws_launch_template.this.id
}

output "iam_role_name" {
  description = "Name of the instance role."
  value       = aws_iam_role.this.name
}

output "iam_role_arn" {
  description = "ARN of the instance role."
  value       = aws_iam_role.this.arn
}

output "vpc_endpoint_ids" {
  description = "Interface endpoint ids by service, when create_vpc_endpoints is true."
  value       = { for k, e in aws_vpc_endpoint.this : k => e.id }
}

output "developer_iam_policy_json" {
  description = "Least-privilege IAM policy for developers who connect through this server: StartSession on the tagged instances (in developer_regions) with only the pinned port-forwarding document (or AWS-StartPortForwardingSession, see developer_session_document), Terminate/ResumeSession and ssmmessages:OpenDataChannel on their own sessions, ec2:DescribeInstances and ssm:DescribeInstanceInformation, and rds-db:connect when developer_rds_connect is set."
  value       = data.aws_iam_policy_document.developer.json
}

output "rds_connect_arn_template" {
  description = "Template of the rds-db:connect resource ARN developers also need (one per database resource id and DB user)."
  value       = local.rds_connect_arn_template
}

output "server_config" {
  description = "The rendered /etc/rdsproxy/server.yaml (no secrets)."
  value       = module.config.server_yaml
}

output "ami_id" {
  description = "The AMI the launch template uses."
  value       = local.ami_id
}

output "ssm_document_name" {
  description = "Session document that forwards only to the server port; developers pass it as `rdsproxy connect --via ssm --ssm-document <name>`."
  value       = aws_ssm_document.port_forward.name
}
