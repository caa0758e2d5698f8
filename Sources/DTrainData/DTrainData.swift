// The data module: tokenizer, formats, templates, batching.
