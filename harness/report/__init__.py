"""Reports read only the result store (or result dicts): terminal matrix now; HTML/Markdown/JSON later."""
