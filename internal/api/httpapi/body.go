package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/moat-iot/moat/internal/problem"
)

// limitedBody is a request body bounded by its route's limit that remembers whether the
// handler tried to read past it, so that any error the handler makes of that (a streamed
// upload, a raw read with a limit of its own) is answered 413 with the route's limit.
type limitedBody struct {
	io.ReadCloser // http.MaxBytesReader over the request body
	limit         int64
	hit           bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		b.hit = true
	}
	return n, err
}

func tooLarge(limit int64) *problem.Error {
	return problem.New(problem.TooLarge, "body_too_large", "the body must be at most %d bytes", limit)
}

// ReadJSON reads the request's JSON body (bounded by Begin) into a new value of type t and
// validates it.
func ReadJSON(r *http.Request, t reflect.Type) (any, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && mt != "application/merge-patch+json") {
		return nil, problem.New(problem.Unsupported, "unsupported_media_type", "the body must be application/json")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		if e, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge(e.Limit)
		}
		return nil, problem.New(problem.Invalid, "body_unreadable", "the body could not be read")
	}
	return DecodeBody(body, t)
}

// Validator is a request body that checks itself.
type Validator interface{ Validate() error }

// DecodeBody strictly decodes body into a new value of type t and validates it: valid UTF-8,
// one JSON object, no unknown fields, no trailing data, right types, then Validate. Every
// failure is an Invalid problem naming the field where it can.
func DecodeBody(body []byte, t reflect.Type) (any, error) {
	if !utf8.Valid(body) {
		return nil, problem.New(problem.Invalid, "invalid_utf8", "the body is not valid UTF-8")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, problem.New(problem.Invalid, "body_required", "a JSON object body is required")
	}
	ptr := reflect.New(t)
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(ptr.Interface()); err != nil {
		return nil, jsonProblem(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, problem.New(problem.Invalid, "trailing_data", "the body must hold exactly one JSON object")
	}
	v := ptr.Elem().Interface()
	if val, ok := v.(Validator); ok {
		if err := val.Validate(); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func jsonProblem(err error) error {
	if e, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		field := e.Field
		return &problem.Error{Kind: problem.Invalid, Code: "wrong_type", Field: field,
			Detail: fmt.Sprintf("%s must be a JSON %s, not %s", fieldName(field), jsonKind(e.Type), e.Value)}
	}
	if e, ok := errors.AsType[*json.SyntaxError](err); ok {
		return problem.New(problem.Invalid, "malformed_json", "the body is not valid JSON (at byte %d)", e.Offset)
	}
	if strings.HasPrefix(err.Error(), "json: unknown field ") {
		// encoding/json has no typed error for unknown fields; the field name is all we take.
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &problem.Error{Kind: problem.Invalid, Code: "unknown_field", Field: name,
			Detail: fmt.Sprintf("unknown field %q", name)}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return problem.New(problem.Invalid, "malformed_json", "the body is truncated JSON")
	}
	return problem.New(problem.Invalid, "malformed_json", "the body is not a valid JSON object")
}

func fieldName(f string) string {
	if f == "" {
		return "the body"
	}
	return f
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Float64:
		return "number"
	case reflect.Slice:
		return "array"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "object"
}
