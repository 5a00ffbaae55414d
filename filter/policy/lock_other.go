//go:build !wasm

package policy

import "sync"

// cacheLock guards the verdict cache; natively the engine is shared by
// goroutines (see lock_wasm.go for the filter build).
type cacheLock struct{ sync.Mutex }
