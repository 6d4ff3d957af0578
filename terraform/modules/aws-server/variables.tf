# ---------------------------------------------------------------------------
# Placement and network
# ---------------------------------------------------------------------------

variable "name" {
  description = "Server name. Instances are tagged rdsproxy:server=<name>, which `rdsproxy connect --via ssm` looks for; also the prefix of every resource name."
  type        = string
  default     = "rdsproxy"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,30}$", var.name))
    error_message = "The name must be 1-31 lower-case letters, digits or '-', starting with a letter or digit."
  }
}

variable "vpc_id" {
  description = "VPC in which the server runs; it must be the VPC of the RDS security groups."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "The vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Private subnets for the Auto Scaling group (and the VPC endpoints when created). Instances never get a public IP."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "Give at least one subnet id (subnet-...)."
  }
}

variable "rds_security_group_ids" {
  description = "Security groups of the databases to reach. The server's only non-HTTPS egress is database_port to these groups."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.rds_security_group_ids : can(regex("^sg-[0-9a-f]+$", s))])
    error_message = "Each RDS security group id must look like sg-0123456789abcdef0."
  }
}

variable "create_rds_ingress_rules" {
  description = "Add an ingress rule to each RDS security group admitting database_port from the server's security group. Set false when those groups are managed elsewhere."
  type        = bool
  default     = true
}

variable "database_port" {
  description = "Port of the databases (egress to, and ingress on, the RDS security groups)."
  type        = number
  default     = 5432

  validation {
    condition     = var.database_port >= 1 && var.database_port <= 65535 && floor(var.database_port) == var.database_port
    error_message = "The database_port must be an integer from 1 to 65535."
  }
}

variable "create_vpc_endpoints" {
  description = "Create interface endpoints (private DNS) for vpc_endpoint_services with a security group that admits 443 from the server only. Then HTTPS egress goes to that group instead of 0.0.0.0/0 unless https_egress_cidr_blocks says otherwise."
  type        = bool
  default     = false
}

variable "vpc_endpoint_services" {
  description = "Interface endpoint services created when create_vpc_endpoints is true: SSM needs ssm, ssmmessages and ec2messages; discovery needs rds (home region only); caller identity needs sts (the server forwards clients' signed GetCallerIdentity requests). logs is added when cloudwatch_logs is enabled."
  type        = list(string)
  default     = ["ssm", "ssmmessages", "ec2messages", "rds", "sts"]

  validation {
    condition     = alltrue([for s in var.vpc_endpoint_services : can(regex("^[a-z0-9.-]+$", s))])
    error_message = "Each service is a short service name such as ssm or ssmmessages."
  }
}

variable "vpc_endpoint_subnet_ids" {
  description = "Subnets for the interface endpoints, one per Availability Zone. Empty: subnet_ids."
  type        = list(string)
  default     = []
}

variable "https_egress_cidr_blocks" {
  description = "CIDR blocks the server may reach on 443 (SSM, RDS API, binary download). null: [\"0.0.0.0/0\"] without VPC endpoints, [] with them. Discovery in other regions and binary_url downloads need internet (NAT) egress."
  type        = list(string)
  default     = null

  validation {
    condition     = var.https_egress_cidr_blocks == null || alltrue([for c in coalesce(var.https_egress_cidr_blocks, []) : can(cidrhost(c, 0))])
    error_message = "Each entry must be an IPv4 CIDR block."
  }
}

variable "https_egress_prefix_list_ids" {
  description = "Managed prefix lists the server may reach on 443, e.g. the S3 gateway endpoint's (pl-...) when the binary comes from S3 and there is no NAT."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.https_egress_prefix_list_ids : can(regex("^pl-[0-9a-f]+$", p))])
    error_message = "Each prefix list id must look like pl-0123456789abcdef0."
  }
}

# ---------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------

variable "instance_type" {
  description = "EC2 instance type; its architecture must match var.architecture."
  type        = string
  default     = "t4g.micro"
}

variable "architecture" {
  description = "CPU architecture of the AMI and the binary: arm64 or x86_64."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "The architecture must be arm64 or x86_64."
  }
}

variable "ami_id" {
  description = "Pinned AMI id. null: the latest Amazon Linux 2023 from the public SSM parameter (the launch template, and so an instance refresh, follows every new AMI). The AMI must run systemd, the SSM agent, curl and sha256sum (and the AWS CLI for S3 delivery)."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]+$", coalesce(var.ami_id, "x")))
    error_message = "The ami_id must look like ami-0123456789abcdef0."
  }
}

variable "root_device_name" {
  description = "Root device of the AMI (Amazon Linux 2023: /dev/xvda)."
  type        = string
  default     = "/dev/xvda"
}

variable "root_volume_size" {
  description = "Root volume size in GiB (gp3, always encrypted)."
  type        = number
  default     = 8

  validation {
    condition     = var.root_volume_size >= 8 && var.root_volume_size <= 1024
    error_message = "The root_volume_size must be between 8 and 1024 GiB."
  }
}

variable "kms_key_id" {
  description = "KMS key ARN for the root volume. null: the account's default EBS key. The volume is encrypted either way."
  type        = string
  default     = null
}

variable "min_size" {
  description = "Minimum number of instances in the Auto Scaling group."
  type        = number
  default     = 2

  validation {
    condition     = var.min_size >= 0 && floor(var.min_size) == var.min_size
    error_message = "The min_size must be a non-negative integer."
  }
}

variable "max_size" {
  description = "Maximum number of instances (at least min_size; one more than desired lets a rolling refresh launch before it terminates)."
  type        = number
  default     = 3

  validation {
    condition     = var.max_size >= 1 && floor(var.max_size) == var.max_size
    error_message = "The max_size must be a positive integer."
  }
}

variable "desired_capacity" {
  description = "Desired number of instances, spread over the subnets' availability zones (2 or more needs subnets in at least two zones). Clients spread new connections over every running instance with the server tag and move off an instance that is replaced."
  type        = number
  default     = 2

  validation {
    condition     = var.desired_capacity >= 1 && var.desired_capacity <= 100 && floor(var.desired_capacity) == var.desired_capacity
    error_message = "The desired_capacity must be an integer from 1 to 100 (2 or more to survive an instance replacement or a zone outage without a gap)."
  }
}

variable "lifecycle_hooks" {
  description = "Auto Scaling lifecycle hooks that make replacements seamless. Launch: the instance enters service (and an instance refresh moves on) only once GET /readyz answers, within ready_timeout_seconds, else it is abandoned. Termination: the instance stops rdsproxy (SIGTERM: running sessions get drain_timeout, then 57P01) before it is terminated. The role may complete lifecycle actions on this server's group only. Needs the AWS CLI on the AMI."
  type = object({
    enabled               = optional(bool, true)
    ready_timeout_seconds = optional(number, 600)
  })
  default = {}

  validation {
    condition     = var.lifecycle_hooks.ready_timeout_seconds >= 60 && var.lifecycle_hooks.ready_timeout_seconds <= 7000 && floor(var.lifecycle_hooks.ready_timeout_seconds) == var.lifecycle_hooks.ready_timeout_seconds
    error_message = "lifecycle_hooks.ready_timeout_seconds must be an integer from 60 to 7000 (the hook's heartbeat, 60 s more, is at most 7200)."
  }
}

variable "binary" {
  description = "Where the instance gets the rdsproxy binary (a raw executable or a .tar.gz holding `rdsproxy`) and its SHA-256, which user data verifies before installing. Set url (https) or s3_bucket and s3_key; s3_region defaults to the current region."
  type = object({
    sha256    = string
    url       = optional(string)
    s3_bucket = optional(string)
    s3_key    = optional(string)
    s3_region = optional(string)
  })

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.binary.sha256))
    error_message = "The binary.sha256 must be 64 lower-case hex digits."
  }

  validation {
    condition     = (var.binary.url != null) != (var.binary.s3_bucket != null && var.binary.s3_key != null)
    error_message = "Set exactly one of binary.url or binary.s3_bucket with binary.s3_key."
  }

  validation {
    condition     = var.binary.url == null || can(regex("^https://[^\\s'\"\\\\`$]+$", coalesce(var.binary.url, "x")))
    error_message = "The binary.url must be https:// without spaces, quotes, backslashes, backticks or '$'."
  }

  validation {
    condition = var.binary.s3_bucket == null || (
      can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", coalesce(var.binary.s3_bucket, "x"))) &&
      can(regex("^[A-Za-z0-9!_.*()/+=@,:-]+$", coalesce(var.binary.s3_key, "x")))
    )
    error_message = "The binary.s3_bucket must be a bucket name and binary.s3_key a key without spaces, quotes or '$'."
  }
}

variable "readiness_replacement" {
  description = "Replace an instance whose server stays unready: a systemd timer checks GET /readyz every interval_seconds and, after failures consecutive failures, calls autoscaling:SetInstanceHealth Unhealthy on its own instance (the role may do so only for this server's group). The Auto Scaling group itself sees only EC2 status checks. Needs the AWS CLI on the AMI."
  type = object({
    enabled          = optional(bool, true)
    interval_seconds = optional(number, 30)
    failures         = optional(number, 10)
  })
  default = {}

  validation {
    condition = (var.readiness_replacement.interval_seconds >= 10 && var.readiness_replacement.interval_seconds <= 3600 &&
      var.readiness_replacement.failures >= 2 && var.readiness_replacement.failures <= 1000 &&
    floor(var.readiness_replacement.interval_seconds) == var.readiness_replacement.interval_seconds && floor(var.readiness_replacement.failures) == var.readiness_replacement.failures)
    error_message = "readiness_replacement needs an integer interval_seconds from 10 to 3600 and an integer failures from 2 to 1000."
  }
}

variable "cloudwatch_logs" {
  description = "Ship the server's journal (the session audit lines) to CloudWatch Logs, so it outlives the instance: a log group (default /rdsproxy/<name>) with retention_in_days and an optional KMS key (its key policy must allow the logs service), the CloudWatch agent (installed with dnf from the Amazon Linux repositories, which the S3 gateway endpoint serves), and a logs interface endpoint with create_vpc_endpoints."
  type = object({
    enabled           = optional(bool, false)
    retention_in_days = optional(number, 90)
    kms_key_arn       = optional(string)
    log_group_name    = optional(string)
  })
  default = {}

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.cloudwatch_logs.retention_in_days)
    error_message = "The cloudwatch_logs.retention_in_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }

  validation {
    condition     = var.cloudwatch_logs.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", coalesce(var.cloudwatch_logs.kms_key_arn, "x")))
    error_message = "The cloudwatch_logs.kms_key_arn must be a KMS key ARN."
  }

  validation {
    condition     = var.cloudwatch_logs.log_group_name == null || can(regex("^[A-Za-z0-9_./#-]{1,512}$", coalesce(var.cloudwatch_logs.log_group_name, "x")))
    error_message = "The cloudwatch_logs.log_group_name must be a CloudWatch Logs group name."
  }
}

variable "iam_role_permissions_boundary" {
  description = "ARN of a permissions boundary for the instance role, or null."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource (and the instances and volumes)."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------
# rdsproxy server settings (see modules/server-config for the YAML keys)
# ---------------------------------------------------------------------------

variable "port" {
  description = "Loopback port the server listens on for clients; SSM port forwarding targets it. Nothing outside the instance can reach it."
  type        = number
  default     = 5480

  validation {
    condition     = var.port >= 1024 && var.port <= 65535 && floor(var.port) == var.port
    error_message = "The port must be an integer from 1024 to 65535 (the server runs unprivileged)."
  }
}

variable "admin_port" {
  description = "Loopback port of /healthz, /readyz and /metrics."
  type        = number
  default     = 9480

  validation {
    condition     = var.admin_port >= 1024 && var.admin_port <= 65535 && floor(var.admin_port) == var.admin_port
    error_message = "The admin_port must be an integer from 1024 to 65535."
  }
}

variable "regions" {
  description = "Regions in which to discover databases. Empty: the current region. Other regions' RDS APIs need internet egress."
  type        = list(string)
  default     = []
}

variable "allow_tags" {
  description = "Tag rules every discovered database must match (key=value, key=glob or key). Empty: rdsproxy:enabled=true."
  type        = list(string)
  default     = []
}

variable "deny_tags" {
  description = "Tag rules that exclude a database when any matches."
  type        = list(string)
  default     = []
}

variable "refresh_interval" {
  description = "Discovery refresh interval (e.g. 60s)."
  type        = string
  default     = "60s"
}

variable "static_targets" {
  description = "Databases declared in the config file besides the discovered ones; same shape as modules/server-config's static_targets. Their security groups belong in rds_security_group_ids."
  type = list(object({
    name       = string
    endpoint   = string
    region     = optional(string)
    auth       = optional(string, "iam")
    tls        = optional(string, "verify-full")
    database   = optional(string)
    users      = optional(list(string), [])
    read_only  = optional(bool, false)
    local_port = optional(number)
    principals = optional(list(string), [])
  }))
  default = []
}

variable "max_sessions" {
  description = "Maximum concurrent client sessions per instance."
  type        = number
  default     = 1000
}

variable "require_identity" {
  description = "Refuse connections that carry no verified caller identity; false only while old clients are upgraded (the README's upgrade steps)."
  type        = bool
  default     = true
}

variable "revoke_sessions" {
  description = "End running sessions that a change of the tag rules, rdsproxy:users or rdsproxy:principals no longer admits; false applies such a change to new sessions only."
  type        = bool
  default     = false
}

variable "startup_timeout" {
  description = "Time a client has to send its startup message."
  type        = string
  default     = "10s"
}

variable "dial_timeout" {
  description = "Upstream dial and TLS timeout."
  type        = string
  default     = "10s"
}

variable "max_startup_size" {
  description = "Largest startup message accepted, in bytes (at least 8024: rdsproxy connect's startup carries the caller identity)."
  type        = number
  default     = 10000
}

variable "drain_timeout" {
  description = "How long SIGTERM (instance refresh, scale-in, reboot) waits for sessions to end. Also sizes the systemd stop timeout (+15 s) and the termination hook's heartbeat (+55 s); at most 7100 s."
  type        = string
  default     = "30s"
}

variable "log_format" {
  description = "Log format: text or json (journald; ship with the CloudWatch agent if needed)."
  type        = string
  default     = "json"
}

variable "log_level" {
  description = "Log level: debug, info, warn or error."
  type        = string
  default     = "info"
}

# ---------------------------------------------------------------------------
# Developer access (output only)
# ---------------------------------------------------------------------------

variable "developer_rds_connect" {
  description = "When set, the developer policy output also grants rds-db:connect for these database users on these DB resource ids (db-... for instances, cluster-... for Aurora). null: see the rds_connect_arn_template output instead."
  type = object({
    resource_ids = list(string)
    db_users     = list(string)
  })
  default = null

  validation {
    condition = var.developer_rds_connect == null || alltrue(concat(
      [for r in try(var.developer_rds_connect.resource_ids, []) : can(regex("^(db|cluster)-[A-Z0-9]+$", r))],
      [for u in try(var.developer_rds_connect.db_users, []) : can(regex("^[A-Za-z0-9_.@-]+$", u))],
    ))
    error_message = "Resource ids look like db-ABCDEFGHIJKL or cluster-ABCDEFGHIJKL; user names are PostgreSQL role names."
  }
}

variable "developer_session_document" {
  description = "Document the developer policy allows for ssm:StartSession: pinned (this module's Session document, which forwards only to port; clients pass `rdsproxy connect --ssm-document <ssm_document_name output>`) or aws (AWS-StartPortForwardingSession, which lets the developer forward to any port on the instance, e.g. 22 or the admin port; only for clients without --ssm-document)."
  type        = string
  default     = "pinned"

  validation {
    condition     = contains(["pinned", "aws"], var.developer_session_document)
    error_message = "The developer_session_document must be pinned or aws."
  }
}

variable "developer_regions" {
  description = "Regions whose servers named var.name the developer policy covers (instances, sessions and the pinned document, which the module creates in each region it is deployed to). Empty: the current region."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.developer_regions : can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", r))])
    error_message = "Each developer region must be a region name such as eu-west-1."
  }
}
