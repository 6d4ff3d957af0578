// Package iamtoken builds, parses and pre-validates RDS IAM authentication
// tokens.
//
// An RDS IAM token is a SigV4 presigned URL without its scheme (the AWS CLI
// and SDK v1 write "host:port/?", SDK v2 writes "host:port?"; Parse accepts
// both, the canonical URI is "/" either way):
//
//	host:port?Action=connect&DBUser=u&X-Amz-Algorithm=AWS4-HMAC-SHA256&
//	X-Amz-Credential=AKID%2F20240101%2Fus-east-1%2Frds-db%2Faws4_request&
//	X-Amz-Date=20240101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&
//	[X-Amz-Security-Token=...&]X-Amz-Signature=...
//
// Data flow: the client side calls Build (through a Cache, so that one token
// is reused for many connections until shortly before it expires) and sends
// the token as the PostgreSQL password. The server side calls Parse and then
// Token.Check against the target it is about to dial; Check needs no AWS call
// and fails with an *Error whose Reason is a short label for metrics and whose
// Msg tells the user what to fix. Only RDS can verify the signature itself;
// the sandbox emulator does that with the sandbox credentials.
//
// No error produced here contains the token text, its signature or its
// session token.
//
// docs/architecture.md §4 (signing) and §5 (the pre-check) show where
// tokens are used.
package iamtoken
