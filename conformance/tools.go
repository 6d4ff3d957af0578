//go:build tools

// Package conformance holds no code: tools.go keeps the plugin's main
// package in the module graph, so go.mod and go.sum pin it and every
// package it imports. The plugin's own go.mod declares no requirements, so
// the versions below are pinned here to match those it was released with
// (its vendor directory): the old twinj/uuid API (NewV4 without an error),
// xtaci/smux v1.5.24, gorilla/websocket v1.5.0.
package conformance

import _ "github.com/aws/session-manager-plugin/src/sessionmanagerplugin-main"
