# The storage side of a loglake deployment on AWS: the lake bucket and the two IAM policies
# loglake's processes need. Ingest workers and the compactor write; the query service reads.
# Run the processes wherever you run services (ECS, Kubernetes, VMs) and attach the policies.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

resource "aws_s3_bucket" "lake" {
  bucket        = var.bucket_name
  force_destroy = false
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "lake" {
  bucket                  = aws_s3_bucket.lake.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
    bucket_key_enabled = true
  }
}

# Delta tables manage their own versions: S3 object versioning would only keep files the
# compactor's vacuum meant to delete (retention that does not actually delete, PEERS.md #13).
resource "aws_s3_bucket_versioning" "lake" {
  bucket = aws_s3_bucket.lake.id
  versioning_configuration {
    status = "Disabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {
      prefix = "${var.prefix}/"
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }
  rule {
    id     = "selfcheck-probes"
    status = "Enabled"
    filter {
      prefix = "${var.prefix}/_loglake/"
    }
    expiration {
      days = 1
    }
  }
}

data "aws_iam_policy_document" "writer" {
  statement {
    sid       = "ListLake"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.prefix}/*", var.prefix]
    }
  }
  statement {
    sid = "ReadWriteLake"
    # DeleteObject: the self-check probe, retention and vacuum. Delta commits themselves are
    # conditional PUTs (If-None-Match), which AWS S3 enforces.
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.lake.arn}/${var.prefix}/*"]
  }
}

data "aws_iam_policy_document" "reader" {
  statement {
    sid       = "ListLake"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.prefix}/*", var.prefix]
    }
  }
  statement {
    sid       = "ReadLake"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.lake.arn}/${var.prefix}/*"]
  }
}

resource "aws_iam_policy" "writer" {
  name   = "${var.name}-lake-writer"
  policy = data.aws_iam_policy_document.writer.json
  tags   = var.tags
}

resource "aws_iam_policy" "reader" {
  name   = "${var.name}-lake-reader"
  policy = data.aws_iam_policy_document.reader.json
  tags   = var.tags
}
