//! Configuration: defaults < YAML file < `ROCKETMQ_*` environment, one typed, validated tree.
