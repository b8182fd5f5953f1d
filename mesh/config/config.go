// Package config loads Sluice's YAML configuration with SLUICE_… environment
// overrides into a caller's struct. Keys are the structs' yaml tags; the
// environment name of a key is the prefix, then the key path upper-cased
// with dots and dashes turned into underscores (nats.url → SLUICE_NATS_URL).
// Scalar and string-list fields can be overridden from the environment, and
// string maps take one variable per entry: SLUICE_DISPATCHER_CRM_HEADERS_AUTHORIZATION
// sets dispatcher.crm.headers[AUTHORIZATION] (for secrets kept out of files).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrInvalid wraps every load error; the caller prints it and exits non-zero.
var ErrInvalid = errors.New("invalid configuration")

// Load fills out (a pointer to a struct that already holds the defaults)
// from the YAML file at path (skipped when path is empty) and then from the
// environment variables in env (os.Environ() form) that start with prefix.
// Unknown YAML keys and unparsable values are errors naming the key.
func Load(path string, env []string, prefix string, out any) error {
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if err := Decode(b, out); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalid, path, err)
		}
	}
	return applyEnv(env, prefix, out)
}

// Decode decodes YAML b into out, refusing unknown keys.
func Decode(b []byte, out any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		return err
	}
	return nil
}

// Field is one overridable key. For a string map, Env is a prefix: each
// variable <Env>_<NAME> sets entry NAME.
type Field struct {
	Key   string
	Env   string
	IsMap bool
	v     reflect.Value
}

// Fields lists every key of out that the environment can override, sorted.
func Fields(prefix string, out any) []Field {
	var fs []Field
	walk(reflect.ValueOf(out).Elem(), "", prefix, &fs)
	sort.Slice(fs, func(i, j int) bool { return fs[i].Key < fs[j].Key })
	return fs
}

func walk(v reflect.Value, path, prefix string, fs *[]Field) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := strings.Split(sf.Tag.Get("yaml"), ",")[0]
		if tag == "-" {
			continue
		}
		if tag == "" {
			tag = strings.ToLower(sf.Name)
		}
		key := tag
		if path != "" {
			key = path + "." + tag
		}
		fv := v.Field(i)
		switch {
		case sf.Type.Kind() == reflect.Struct && sf.Type != reflect.TypeOf(time.Time{}):
			walk(fv, key, prefix, fs)
		case scalar(sf.Type):
			*fs = append(*fs, Field{Key: key, Env: envName(prefix, key), v: fv})
		case sf.Type.Kind() == reflect.Map && sf.Type.Key().Kind() == reflect.String && sf.Type.Elem().Kind() == reflect.String:
			*fs = append(*fs, Field{Key: key, Env: envName(prefix, key), IsMap: true, v: fv})
		}
	}
}

func envName(prefix, key string) string {
	return prefix + strings.NewReplacer(".", "_", "-", "_").Replace(strings.ToUpper(key))
}

func scalar(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint64, reflect.Float64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	}
	return false
}

func applyEnv(env []string, prefix string, out any) error {
	vals := map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, prefix) {
			vals[k] = v
		}
	}
	if len(vals) == 0 {
		return nil
	}
	var errs []error
	for _, f := range Fields(prefix, out) {
		if f.IsMap {
			for k, v := range vals {
				name, ok := strings.CutPrefix(k, f.Env+"_")
				if !ok || name == "" {
					continue
				}
				if f.v.IsNil() {
					f.v.Set(reflect.MakeMap(f.v.Type()))
				}
				// The variable replaces a file entry that differs only in
				// case (Authorization vs AUTHORIZATION), so one value wins.
				for _, mk := range f.v.MapKeys() {
					if strings.EqualFold(mk.String(), name) {
						f.v.SetMapIndex(mk, reflect.Value{})
					}
				}
				f.v.SetMapIndex(reflect.ValueOf(name), reflect.ValueOf(v))
			}
			continue
		}
		s, ok := vals[f.Env]
		if !ok {
			continue
		}
		if err := set(f.v, s); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s (from %s): %w", ErrInvalid, f.Key, f.Env, err))
		}
	}
	return errors.Join(errs...)
}

func set(v reflect.Value, s string) error {
	if v.Type() == reflect.TypeOf(time.Duration(0)) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		v.SetInt(n)
	case reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return err
		}
		v.SetUint(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return err
		}
		v.SetFloat(f)
	case reflect.Slice:
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	}
	return nil
}
