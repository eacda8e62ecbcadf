package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"slices"
	"strconv"
)

// numberMode says how JSON numbers are decoded.
type numberMode int

const (
	// float64Numbers decodes every number as float64, as encoding/json does by default and as
	// Argo CD hands objects to its Lua scripts. A number out of float64's range is bad JSON.
	float64Numbers numberMode = iota
	// int64Numbers decodes an integer as int64 and any other number as float64, as the API
	// machinery's own JSON decoding does. kstatus reads metadata.generation and
	// status.observedGeneration with NestedInt64, which rejects float64.
	int64Numbers
)

// readObjects decodes every JSON value on r and flattens lists into their items.
func readObjects(r io.Reader, numbers numberMode) ([]map[string]any, error) {
	dec := json.NewDecoder(r)
	if numbers == int64Numbers {
		dec.UseNumber()
	}
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
		items, err := flatten(v, numbers)
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

func flatten(v any, numbers numberMode) ([]map[string]any, error) {
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
		if numbers == int64Numbers {
			if err := convertNumbers(obj); err != nil {
				return nil, fmt.Errorf("item %d: %w", i+1, err)
			}
		}
		objects = append(objects, obj)
	}
	return objects, nil
}

// convertNumbers replaces, in place, every json.Number in v's objects and arrays with an int64
// where the number is an integer and a float64 otherwise.
func convertNumbers(v any) error {
	switch t := v.(type) {
	case map[string]any:
		return convertEach(maps.All(t), func(k string, n any) { t[k] = n })
	case []any:
		return convertEach(slices.All(t), func(i int, n any) { t[i] = n })
	}
	return nil
}

// convertEach converts the items of one object or array: numbers through set, containers in
// place.
func convertEach[K comparable](items iter.Seq2[K, any], set func(K, any)) error {
	for k, item := range items {
		number, isNumber := item.(json.Number)
		if !isNumber {
			if err := convertNumbers(item); err != nil {
				return err
			}
			continue
		}
		if i, err := strconv.ParseInt(number.String(), 10, 64); err == nil {
			set(k, i)
			continue
		}
		f, err := strconv.ParseFloat(number.String(), 64)
		if err != nil {
			return fmt.Errorf("number %s out of range", number)
		}
		set(k, f)
	}
	return nil
}

func nameOf(obj map[string]any) string {
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	return name
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
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
