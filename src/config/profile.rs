//! Built-in profiles: ready-made `subscription_defaults` (and client settings) that replace the
//! original design's preset factory functions. The data is `config/profiles/<name>.yaml`,
//! compiled in, so the documented file and the applied defaults cannot drift apart.
//!
//! Invariant: a profile file holds no `subscriptions` and no `profile` key (tested), so it only
//! ever supplies defaults.

use super::values::Profile;

impl Profile {
    /// The profile's YAML text (`config/profiles/<name>.yaml`).
    pub fn yaml(self) -> &'static str {
        match self {
            Self::HighThroughput => include_str!("../../config/profiles/high_throughput.yaml"),
            Self::LowLatency => include_str!("../../config/profiles/low_latency.yaml"),
            Self::ResourceSaving => include_str!("../../config/profiles/resource_saving.yaml"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_only_supply_defaults() {
        for name in Profile::NAMES {
            let profile: Profile = name.parse().expect("canonical name parses");
            let value: serde_yaml::Value =
                serde_yaml::from_str(profile.yaml()).expect("profile is YAML");
            let map = value.as_mapping().expect("profile is a mapping");
            assert!(map.get("subscriptions").is_none(), "{name}");
            assert!(map.get("profile").is_none(), "{name}");
            assert!(map.get("subscription_defaults").is_some(), "{name}");
        }
    }
}
