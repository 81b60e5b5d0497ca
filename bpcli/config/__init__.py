"""The config file: YAML reading, the schema built from the registries, messages, reference docs."""
