// The chat-template interpreter is its own module; what encodes data with it re-exports it, so
// that `import DTrainData` gives the templates too.
@_exported import DTrainTemplates
