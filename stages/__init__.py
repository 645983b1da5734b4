"""Stage functions of porch: pure pandas ``(DataFrame, config) -> (DataFrame, report)``, and sample data."""
