"""Policy files: schema, YAML loading with line numbers, compilation into lookup structures."""
