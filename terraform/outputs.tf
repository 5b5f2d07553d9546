output "lake_url" {
  description = "Value for lake.url in loglake.toml."
  value       = "s3://${aws_s3_bucket.lake.bucket}/${var.prefix}"
}

output "writer_policy_arn" {
  description = "Attach to the roles of ingest workers and the compactor."
  value       = aws_iam_policy.writer.arn
}

output "reader_policy_arn" {
  description = "Attach to the role of the query service."
  value       = aws_iam_policy.reader.arn
}
