package hosttest

import (
	"context"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// wasiAllowed is the WASI surface Envoy links: proxy-wasm-cpp-host's
// FOR_ALL_WASI_FUNCTIONS (include/proxy-wasm/exports.h), plus sched_yield,
// poll_oneoff and fd_fdstat_set_flags, which proxy-wasm-cpp-host added for
// Go's wasip1 runtime (pull requests #427 and #533, "add all wasi hostcalls
// used by Go SDK"). Every standard Go wasip1 module imports sched_yield and
// poll_oneoff, so an Envoy built before those changes cannot load it.
var wasiAllowed = map[string]bool{
	"fd_write": true, "fd_read": true, "fd_seek": true, "fd_close": true,
	"fd_fdstat_get": true, "environ_get": true, "environ_sizes_get": true,
	"args_get": true, "args_sizes_get": true, "clock_time_get": true,
	"random_get": true, "proc_exit": true, "path_open": true,
	"fd_prestat_get": true, "fd_prestat_dir_name": true,
	"sched_yield": true, "poll_oneoff": true, "fd_fdstat_set_flags": true,
}

const (
	errnoSuccess = 0
	errnoBadf    = 8
	errnoFault   = 21
	errnoNosys   = 52
)

// instantiateWASI provides wasi_snapshot_preview1 from wazero's
// implementation, with the calls whose Envoy behaviour differs overridden.
// Imports outside wasiAllowed are refused at Compile, so wazero's extra
// functions are never linked by a module that passed.
func instantiateWASI(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)

	// fd_write: stdout goes to the log at info, stderr at error, one entry per
	// call with a trailing newline removed; other fds are EBADF
	// (exports.cc, writevImpl).
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, st []uint64) {
		st[0] = uint64(fdWrite(vmFrom(ctx), mod, u32(st[0]), u32(st[1]), u32(st[2]), u32(st[3])))
	}), params(4), []api.ValueType{i32}).Export("fd_write")

	// fd_read: Envoy supports no reading at all (ENOSYS).
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, _ api.Module, st []uint64) {
		st[0] = errnoNosys
	}), params(4), []api.ValueType{i32}).Export("fd_read")

	// poll_oneoff and fd_fdstat_set_flags answer ENOSYS, as proxy-wasm-cpp-host's
	// stubs for Go's runtime do (or stricter, where a host implements them):
	// the Go runtime turns a failed poll_oneoff into a fatal error (usleep),
	// so a filter that ever made its runtime sleep would trap here as it
	// would in Envoy, instead of working in tests only.
	for _, name := range []string{"poll_oneoff", "fd_fdstat_set_flags"} {
		n := 4
		if name == "fd_fdstat_set_flags" {
			n = 2
		}
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, _ api.Module, st []uint64) {
			st[0] = errnoNosys
		}), params(n), []api.ValueType{i32}).Export(name)
	}

	// fd_prestat_get: no preopened directories, so libc and Go stop probing.
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, _ api.Module, st []uint64) {
		st[0] = errnoBadf
	}), params(2), []api.ValueType{i32}).Export("fd_prestat_get")

	// args and environment are empty: Envoy passes no arguments, and only the
	// environment variables vm_config names (none here).
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, mod api.Module, st []uint64) {
		if !mod.Memory().WriteUint32Le(u32(st[0]), 0) || !mod.Memory().WriteUint32Le(u32(st[1]), 0) {
			st[0] = errnoFault
			return
		}
		st[0] = errnoSuccess
	}), params(2), []api.ValueType{i32}).Export("args_sizes_get")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, mod api.Module, st []uint64) {
		if !mod.Memory().WriteUint32Le(u32(st[0]), 0) || !mod.Memory().WriteUint32Le(u32(st[1]), 0) {
			st[0] = errnoFault
			return
		}
		st[0] = errnoSuccess
	}), params(2), []api.ValueType{i32}).Export("environ_sizes_get")

	_, err := b.Instantiate(ctx)
	return err
}

func fdWrite(vm *VM, mod api.Module, fd, iovs, iovsLen, nwrittenPtr uint32) uint32 {
	var level abi.LogLevel
	switch fd {
	case 1:
		level = abi.LogInfo
	case 2:
		level = abi.LogError
	default:
		return errnoBadf
	}
	mem := mod.Memory()
	var msg []byte
	for i := uint32(0); i < iovsLen; i++ {
		base, ok1 := mem.ReadUint32Le(iovs + 8*i)
		n, ok2 := mem.ReadUint32Le(iovs + 8*i + 4)
		if !ok1 || !ok2 {
			return errnoFault
		}
		if n == 0 {
			continue
		}
		b, ok := mem.Read(base, n)
		if !ok {
			return errnoFault
		}
		msg = append(msg, b...)
	}
	written := len(msg)
	if written > 0 {
		if msg[written-1] == '\n' {
			msg = msg[:written-1]
		}
		if vm != nil {
			vm.log(level, string(msg))
		}
	}
	if !mem.WriteUint32Le(nwrittenPtr, uint32(written)) {
		return errnoFault
	}
	return errnoSuccess
}
