//go:build !linux

package hosttest

import "github.com/tetratelabs/wazero/experimental"

// memoryAllocator is nil off Linux: wazero's default growth.
var memoryAllocator experimental.MemoryAllocator
