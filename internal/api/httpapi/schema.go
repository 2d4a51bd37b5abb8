package httpapi

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/problem"
)

// Schemas builds the OpenAPI 3.0 schemas of Go types by reflection, so that every
// audience's OpenAPI document is generated from the types its handlers encode and cannot
// drift from them (STYLE principle 5). Named struct types become components referenced
// by $ref; a field without omitempty is required; no additional properties are allowed.
type Schemas struct {
	// Components collects the component schemas, by name.
	Components map[string]any
	// Names overrides the component name of a type.
	Names map[reflect.Type]string
	// Enums lists the allowed values of string types.
	Enums map[reflect.Type][]string
	// Local is the package name whose types keep their bare name; others are prefixed with
	// their package name unless the type name already starts with it (product.Create ->
	// ProductCreate).
	Local string
	// Field, optional, may replace the schema of a struct field by its JSON name.
	Field func(name string, t reflect.Type, schema map[string]any) map[string]any
}

// NewSchemas returns an empty builder.
func NewSchemas(local string) *Schemas {
	return &Schemas{Components: map[string]any{}, Local: local}
}

// Name is the component name of a named struct type.
func (s *Schemas) Name(t reflect.Type) string {
	if n, ok := s.Names[t]; ok {
		return n
	}
	pkg := t.PkgPath()
	pkg = pkg[strings.LastIndex(pkg, "/")+1:]
	if pkg == s.Local || strings.HasPrefix(strings.ToLower(t.Name()), pkg) {
		return t.Name()
	}
	return strings.ToUpper(pkg[:1]) + pkg[1:] + t.Name()
}

// Ref returns a $ref to t's component, adding it on first use.
func (s *Schemas) Ref(t reflect.Type) map[string]any {
	name := s.Name(t)
	if _, ok := s.Components[name]; !ok {
		s.Components[name] = map[string]any{} // placeholder against recursion
		s.Components[name] = s.structSchema(t)
	}
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

var timeType = reflect.TypeFor[time.Time]()

// Schema returns the schema of t. It panics on a type it has no schema for: a new body
// type needs a case here, and the audience's OpenAPI test catches it.
func (s *Schemas) Schema(t reflect.Type) map[string]any {
	if t == timeType {
		return map[string]any{"type": "string", "format": "date-time"}
	}
	if vals, ok := s.Enums[t]; ok {
		return map[string]any{"type": "string", "enum": vals}
	}
	if t.Name() == "RawMessage" && t.PkgPath() == "encoding/json" {
		return map[string]any{"description": "Any JSON value."}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return s.Schema(t.Elem())
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int32, reflect.Int64:
		return map[string]any{"type": "integer", "format": "int64"}
	case reflect.Float64:
		return map[string]any{"type": "number", "format": "double"}
	case reflect.Uint32:
		return map[string]any{"type": "integer", "format": "int64", "minimum": 0, "maximum": math.MaxUint32}
	case reflect.Map:
		if t.Key().Kind() == reflect.String {
			return map[string]any{"type": "object", "additionalProperties": s.Schema(t.Elem())}
		}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": s.Schema(t.Elem())}
	case reflect.Struct:
		return s.Ref(t)
	}
	panic(fmt.Sprintf("httpapi: no OpenAPI schema for %v", t))
}

func (s *Schemas) structSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		p := s.Schema(f.Type)
		if s.Field != nil {
			p = s.Field(name, f.Type, p)
		}
		props[name] = p
		if !strings.Contains(opts, "omitempty") {
			required = append(required, name)
		}
	}
	out := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		out["required"] = required
	}
	return out
}

// Page is the schema of a page of item (what ListOf returns): the items and the token of
// the next page.
func (s *Schemas) Page(item reflect.Type) map[string]any {
	return map[string]any{"type": "object", "additionalProperties": false, "required": []string{"items"},
		"properties": map[string]any{
			"items":           map[string]any{"type": "array", "items": s.Schema(item)},
			"next_page_token": map[string]any{"type": "string"},
		}}
}

// ProblemResponse returns a function making an OpenAPI response of an RFC 9457 problem
// document with a description; the problem's component is added to s.
func (s *Schemas) ProblemResponse(problemBody reflect.Type) func(desc string) map[string]any {
	ref := s.Ref(problemBody)
	return func(desc string) map[string]any {
		return map[string]any{"description": desc, "content": map[string]any{problem.ContentType: map[string]any{"schema": ref}}}
	}
}
