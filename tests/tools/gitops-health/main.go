// Command gitops-health prints what GitOps tools compute for the health of Kubernetes objects,
// each with the tool's own code:
//
//	gitops-health kstatus < objects.json
//	gitops-health argocd [-open-libs] [-timeout 1s] <health.lua> < objects.json
//
// kstatus runs sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, the library Flux
// (kustomize-controller, helm-controller) and kpt/cli-utils use to wait for resources. argocd
// runs an Argo CD resource health script (health.lua) in the Lua VM Argo CD embeds
// (github.com/yuin/gopher-lua), the way Argo CD's util/lua runs it (see argocd.go).
//
// stdin holds one object, a list ({"items": [...]}, as `kubectl get -o json` prints), a bare
// array of objects, or a stream of any of these. Each subcommand prints one JSON line per object:
//
//	{"name": "<metadata.name>", "status": "...", "message": "..."}
//
// with kstatus's status (Current, InProgress, Failed, Terminating, NotFound, Unknown) or Argo
// CD's (Healthy, Progressing, Degraded, Suspended, Missing, Unknown, or empty). Bad input, an
// object kstatus cannot read, or a script that does not compile, fails or returns something
// else than a table or nil ends it with a message on stderr and exit 1; bad usage exits 2.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

const usage = `usage: gitops-health kstatus < objects.json
       gitops-health argocd [-open-libs] [-timeout 1s] <health.lua> < objects.json
stdin: one object, {"items": [...]}, [...], or a stream of these`

// command names the running subcommand in error messages.
var command = "gitops-health"

type result struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	sub, args := os.Args[1], os.Args[2:]
	command = "gitops-health " + sub
	switch sub {
	case "kstatus":
		kstatusMain(args)
	case "argocd":
		argocdMain(args)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(os.Stderr, usage)
	default:
		fmt.Fprintf(os.Stderr, "gitops-health: unknown subcommand %q\n%s\n", sub, usage)
		os.Exit(2)
	}
}

// report reads the objects on r, computes each one's health with health and prints one JSON
// line per object on w, ending the program on the first error.
func report(r io.Reader, w io.Writer, numbers numberMode, health func(obj map[string]any) (result, error)) {
	objects, err := readObjects(r, numbers)
	if err != nil {
		fail("%v", err)
	}
	out := json.NewEncoder(w)
	for i, obj := range objects {
		name := nameOf(obj)
		res, err := health(obj)
		if err != nil {
			fail("object %d (%q): %v", i+1, name, err)
		}
		res.Name = name
		if err := out.Encode(res); err != nil {
			fail("writing output: %v", err)
		}
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, command+": "+format+"\n", args...)
	os.Exit(1)
}
