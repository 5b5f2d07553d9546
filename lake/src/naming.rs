//! Names: topic -> table directory -> SQL table name.

use url::Url;

/// Suffix of a topic's quarantine table directory and SQL name.
pub const REJECTED_SUFFIX: &str = "__rejected";

/// The SQL name of a table: lowercased, every character outside `[a-z0-9_]` replaced by `_`.
pub fn sql_table_name(dir: &str) -> String {
    dir.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A table found in the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Directory name under the lake root (the Kafka topic, or `<topic>__rejected`).
    pub dir: String,
    pub sql_name: String,
    pub url: Url,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_names() {
        assert_eq!(sql_table_name("app-logs"), "app_logs");
        assert_eq!(sql_table_name("Logs.Nginx_v2"), "logs_nginx_v2");
        assert_eq!(sql_table_name("app-logs__rejected"), "app_logs__rejected");
    }

    proptest::proptest! {
        #[test]
        fn sql_names_are_identifiers(topic in "[a-zA-Z0-9._-]{1,60}") {
            let name = sql_table_name(&topic);
            proptest::prop_assert_eq!(name.len(), topic.len());
            proptest::prop_assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
    }
}
