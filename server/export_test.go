package server

// SyncBuffer lets the external tests (package server_test) share the log
// buffer this package's own tests use.
type SyncBuffer = syncBuffer
