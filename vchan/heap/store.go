package heap

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"idcfs/vchan"
)

// Store is an in-memory vchan.Store keyed by path. It is safe for
// concurrent use.
type Store struct {
	mu sync.Mutex
	m  map[string]entry
}

type entry struct {
	peer          vchan.DomID
	ringRef, port uint32
}

var _ vchan.Store = (*Store)(nil)

// NewStore returns an empty Store.
func NewStore() *Store { return &Store{m: make(map[string]entry)} }

// Publish records ringRef and port under path.
func (s *Store) Publish(ctx context.Context, path string, peer vchan.DomID, ringRef, port uint32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if path == "" {
		return fmt.Errorf("%w: empty path", ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[path] = entry{peer: peer, ringRef: ringRef, port: port}
	return nil
}

// Lookup returns what was published under path, or ErrNotFound.
func (s *Store) Lookup(ctx context.Context, path string) (ringRef, port uint32, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[path]
	if !ok {
		return 0, 0, fmt.Errorf("%w: %s", ErrNotFound, path)
	}
	return e.ringRef, e.port, nil
}

// Remove deletes path and every path below it. Removing a missing path is
// not an error (as Xenstore RM of a missing node under an existing parent).
func (s *Store) Remove(ctx context.Context, path string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prefix := strings.TrimSuffix(path, "/") + "/"
	for p := range s.m {
		if p == path || strings.HasPrefix(p, prefix) {
			delete(s.m, p)
		}
	}
	return nil
}

// Len is the number of published paths.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
