package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
)

// argocdMain runs `gitops-health argocd [-open-libs] [-timeout 1s] <health.lua>`: the Argo CD
// resource health script on each object, the way Argo CD's util/lua runs it:
//
//   - a fresh LState per object, with the standard libraries skipped and then only package,
//     base and table opened, plus a safe "os" (time and date only) that `require("os")` returns;
//     with -open-libs, the set Argo CD gives built-in scripts and customizations that set
//     resource.customizations.useOpenLibs: also string, math, coroutine, channel and debug,
//     with "os" still the safe one and no io (Argo CD would give the full os and io);
//   - the object in the global `obj`: JSON objects become tables with string keys, arrays
//     tables with keys 1..n, numbers Lua numbers, booleans booleans, null nil;
//   - a deadline per run: one second, as Argo CD, unless -timeout says otherwise;
//   - the returned table read as Argo CD reads it: nil, an empty table or a non-string status
//     or message give an empty status; a status that is not one of Healthy, Progressing,
//     Degraded, Suspended, Missing, Unknown gives Unknown with Argo CD's message.
func argocdMain(args []string) {
	flags := flag.NewFlagSet(command, flag.ExitOnError)
	openLibs := flags.Bool("open-libs", false, "open the standard libraries as Argo CD does for built-in scripts and useOpenLibs customizations (string, math, ...; never io, and os stays limited to time and date)")
	timeout := flags.Duration("timeout", time.Second, "deadline for one run of the script (Argo CD: 1s)")
	flags.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: gitops-health argocd [-open-libs] [-timeout 1s] <health.lua> < objects.json")
		flags.PrintDefaults()
	}
	_ = flags.Parse(args) // ExitOnError: exits 2 on a bad flag, 0 on -h
	if flags.NArg() != 1 {
		flags.Usage()
		os.Exit(2)
	}
	path := flags.Arg(0)
	source, err := os.ReadFile(path)
	if err != nil {
		fail("reading the script: %v", err)
	}
	chunk, err := parse.Parse(strings.NewReader(string(source)), path)
	if err != nil {
		fail("%s does not parse: %v", path, err)
	}
	proto, err := lua.Compile(chunk, path)
	if err != nil {
		fail("%s does not compile: %v", path, err)
	}

	report(os.Stdin, os.Stdout, float64Numbers, func(obj map[string]any) (result, error) {
		return run(proto, obj, *openLibs, *timeout)
	})
}

// Argo CD's wording for a status outside the known set.
const invalidHealthStatus = "Lua returned an invalid health status"

var validStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

// run executes the compiled script once over obj in a new state.
func run(proto *lua.FunctionProto, obj map[string]any, openLibs bool, timeout time.Duration) (result, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	if err := openLibraries(l, openLibs); err != nil {
		return result{}, fmt.Errorf("opening the Lua libraries: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))

	l.Push(l.NewFunctionFromProto(proto))
	if err := l.PCall(0, lua.MultRet, nil); err != nil {
		var apiErr *lua.ApiError
		if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
			apiErr.StackTrace = "" // Argo CD drops the trace too; the message names the line
		}
		return result{}, fmt.Errorf("the script failed: %w", err)
	}
	return readHealth(l.Get(-1))
}

// readHealth reads the script's return value as Argo CD's ExecuteHealthLua does.
func readHealth(v lua.LValue) (result, error) {
	switch v.Type() {
	case lua.LTNil:
		return result{}, nil
	case lua.LTTable:
	default:
		return result{}, fmt.Errorf("expect table output from Lua script, not %s", v.Type())
	}
	// Argo CD encodes the table to JSON and decodes a HealthStatus from it. An empty table
	// encodes as null and a table with only number keys as an array; like a non-string status
	// or message (a JSON type mismatch), both give an empty HealthStatus rather than an error.
	tbl := v.(*lua.LTable)
	if !hasStringKey(tbl) {
		return result{}, nil
	}
	status, statusOK := optionalString(tbl.RawGetString("status"))
	message, messageOK := optionalString(tbl.RawGetString("message"))
	if !statusOK || !messageOK {
		return result{}, nil
	}
	if !validStatuses[status] {
		return result{Status: "Unknown", Message: invalidHealthStatus}, nil
	}
	return result{Status: status, Message: message}, nil
}

func optionalString(v lua.LValue) (string, bool) {
	switch t := v.(type) {
	case *lua.LNilType:
		return "", true
	case lua.LString:
		return string(t), true
	}
	return "", false
}

func hasStringKey(tbl *lua.LTable) bool {
	found := false
	tbl.ForEach(func(k, _ lua.LValue) {
		if k.Type() != lua.LTNumber {
			found = true
		}
	})
	return found
}

// openLibraries opens what Argo CD opens for a health script. Argo CD opens package, base and
// table in every case, preloads a safe os module (time and date), and opens every standard
// library first when the script may use them.
func openLibraries(l *lua.LState, all bool) error {
	type library struct {
		name string
		open lua.LGFunction
	}
	libs := []library{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	}
	if all {
		libs = append(libs, []library{
			{lua.StringLibName, lua.OpenString},
			{lua.MathLibName, lua.OpenMath},
			{lua.CoroutineLibName, lua.OpenCoroutine},
			{lua.ChannelLibName, lua.OpenChannel},
			{lua.DebugLibName, lua.OpenDebug},
		}...)
	}
	for _, lib := range libs {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return fmt.Errorf("%s: %w", lib.name, err)
		}
	}
	safeOs := func(l *lua.LState) int {
		mod := l.NewTable()
		for name, fn := range safeOsFuncs {
			mod.RawSetString(name, l.NewFunction(fn))
		}
		l.Push(mod)
		return 1
	}
	l.PreloadModule(lua.OsLibName, safeOs)
	if all {
		// Argo CD's open-libs state has a global os; ours is the safe subset.
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(safeOs), NRet: 1, Protect: true}); err != nil {
			return fmt.Errorf("os: %w", err)
		}
		mod := l.Get(-1)
		l.Pop(1)
		l.SetGlobal(lua.OsLibName, mod)
		loaded := l.GetField(l.Get(lua.RegistryIndex), "_LOADED")
		l.SetField(loaded, lua.OsLibName, mod)
	}
	return nil
}

// safeOsFuncs holds gopher-lua's own os.time and os.date, taken from its os library in a
// scratch state, so that scripts get the library's real behaviour without execute, exit,
// getenv, remove, rename and the rest.
var safeOsFuncs = func() map[string]lua.LGFunction {
	scratch := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer scratch.Close()
	scratch.Push(scratch.NewFunction(lua.OpenOs))
	scratch.Call(0, 1)
	osMod := scratch.Get(-1).(*lua.LTable)
	funcs := map[string]lua.LGFunction{}
	for _, name := range []string{"time", "date"} {
		fn, ok := osMod.RawGetString(name).(*lua.LFunction)
		if !ok || fn.GFunction == nil {
			panic("gopher-lua's os library has no Go function " + name)
		}
		funcs[name] = fn.GFunction
	}
	return funcs
}()

// toLua converts a value decoded from JSON into the Lua value Argo CD hands its scripts.
func toLua(l *lua.LState, v any) lua.LValue {
	switch t := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(t)
	case float64:
		return lua.LNumber(t)
	case string:
		return lua.LString(t)
	case []any:
		arr := l.CreateTable(len(t), 0)
		for _, item := range t {
			arr.Append(toLua(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(t))
		for k, item := range t {
			tbl.RawSetString(k, toLua(l, item))
		}
		return tbl
	}
	panic(fmt.Sprintf("unexpected JSON value of type %T", v))
}
