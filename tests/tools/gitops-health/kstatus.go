package main

import (
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// kstatusMain runs `gitops-health kstatus`: kstatus's status.Compute on each object.
func kstatusMain(args []string) {
	if len(args) > 0 {
		fmt.Fprintln(os.Stderr, "usage: gitops-health kstatus < objects.json  (one object, {\"items\": [...]}, or [...])")
		os.Exit(2)
	}
	report(os.Stdin, os.Stdout, int64Numbers, func(obj map[string]any) (result, error) {
		res, err := status.Compute(&unstructured.Unstructured{Object: obj})
		if err != nil {
			return result{}, fmt.Errorf("kstatus could not compute its status: %w", err)
		}
		return result{Status: res.Status.String(), Message: res.Message}, nil
	})
}
