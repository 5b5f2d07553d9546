variable "name" {
  description = "Name prefix for IAM policies."
  type        = string
  default     = "loglake"
}

variable "bucket_name" {
  description = "S3 bucket that holds the lake."
  type        = string
}

variable "prefix" {
  description = "Key prefix of the lake inside the bucket: lake.url = s3://<bucket_name>/<prefix>."
  type        = string
  default     = "archive"
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
