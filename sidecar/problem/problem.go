// Package problem is the error vocabulary shared by the sidecar's store, admin
// API and CLI. An Error carries an HTTP status and a machine-readable code next
// to a sentence for the operator, so the same failure reads the same whether it
// surfaces as application/problem+json or as a CLI line.
package problem

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a client-facing failure. Detail must say what is wrong and what to
// do about it; it is shown to operators verbatim.
type Error struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
	// ExistingID names the record a conflict is about (duplicate upload), so a
	// script can pick it up without parsing Detail.
	ExistingID string `json:"existingId,omitempty"`
	// Subscribers lists who still uses a resource a delete was refused for.
	Subscribers []string `json:"subscribers,omitempty"`
}

func (e *Error) Error() string { return e.Detail }

func newf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Title: http.StatusText(status), Detail: fmt.Sprintf(format, args...)}
}

// Invalid is a 400: the request itself is wrong.
func Invalid(code, format string, args ...any) *Error {
	return newf(http.StatusBadRequest, code, format, args...)
}

// Conflict is a 409: the request clashes with stored state.
func Conflict(code, format string, args ...any) *Error {
	return newf(http.StatusConflict, code, format, args...)
}

// NotFound is a 404.
func NotFound(code, format string, args ...any) *Error {
	return newf(http.StatusNotFound, code, format, args...)
}

// As extracts an *Error from err's chain.
func As(err error) (*Error, bool) {
	var p *Error
	if errors.As(err, &p) {
		return p, true
	}
	return nil, false
}
