// Command kstatus computes the kstatus status of Kubernetes objects with the real library that
// Flux (kustomize-controller, helm-controller) and kpt/cli-utils use to wait for resources:
// sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute.
//
// It reads JSON from stdin: one object, a list ({"items": [...]}, as `kubectl get -o json`
// prints), a bare array of objects, or a stream of any of these, and prints one JSON line per
// object:
//
//	{"name": "<metadata.name>", "status": "<Current|InProgress|Failed|Terminating|NotFound|Unknown>", "message": "..."}
//
// Bad input, or an object kstatus cannot read, ends it with a message on stderr and exit 1.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: kstatus < objects.json  (one object, {\"items\": [...]}, or [...])")
		os.Exit(2)
	}
	objects, err := readObjects(os.Stdin)
	if err != nil {
		fail("%v", err)
	}
	out := json.NewEncoder(os.Stdout)
	for i, obj := range objects {
		u := &unstructured.Unstructured{Object: obj}
		res, err := status.Compute(u)
		if err != nil {
			fail("object %d (%q): kstatus could not compute its status: %v", i+1, u.GetName(), err)
		}
		if err := out.Encode(result{Name: u.GetName(), Status: res.Status.String(), Message: res.Message}); err != nil {
			fail("writing output: %v", err)
		}
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}

// readObjects decodes every JSON value on r and flattens lists into their items.
func readObjects(r io.Reader) ([]map[string]any, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	var objects []map[string]any
	values := 0
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("input is not valid JSON: %w", err)
		}
		values++
		items, err := flatten(v)
		if err != nil {
			return nil, fmt.Errorf("JSON value %d: %w", values, err)
		}
		objects = append(objects, items...)
	}
	if values == 0 {
		return nil, errors.New("no input: expected a Kubernetes object, {\"items\": [...]} or [...] as JSON on stdin")
	}
	return objects, nil
}

func flatten(v any) ([]map[string]any, error) {
	var items []any
	switch t := v.(type) {
	case []any:
		items = t
	case map[string]any:
		list, isList := t["items"]
		if !isList {
			items = []any{t}
			break
		}
		arr, ok := list.([]any)
		if !ok && list != nil {
			return nil, fmt.Errorf(`"items" is %s, not an array`, kindOf(list))
		}
		items = arr
	default:
		return nil, fmt.Errorf("expected an object or an array, got %s", kindOf(v))
	}
	objects := make([]map[string]any, 0, len(items))
	for i, item := range items {
		obj, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("item %d is %s, not an object", i+1, kindOf(item))
		}
		converted, err := convertNumbers(obj)
		if err != nil {
			return nil, fmt.Errorf("item %d: %w", i+1, err)
		}
		objects = append(objects, converted.(map[string]any))
	}
	return objects, nil
}

// convertNumbers turns json.Number into int64 where the number is an integer and float64
// otherwise, as the API machinery's own JSON decoding does. kstatus reads metadata.generation
// and status.observedGeneration with NestedInt64, which rejects float64.
func convertNumbers(v any) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		for k, item := range t {
			c, err := convertNumbers(item)
			if err != nil {
				return nil, err
			}
			t[k] = c
		}
		return t, nil
	case []any:
		for i, item := range t {
			c, err := convertNumbers(item)
			if err != nil {
				return nil, err
			}
			t[i] = c
		}
		return t, nil
	case json.Number:
		if i, err := strconv.ParseInt(t.String(), 10, 64); err == nil {
			return i, nil
		}
		f, err := strconv.ParseFloat(t.String(), 64)
		if err != nil {
			return nil, fmt.Errorf("number %s out of range", t)
		}
		return f, nil
	default:
		return v, nil
	}
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
