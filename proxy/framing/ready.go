package framing

// Ready is what a checking connection (the front end's, a backend's) has read and checked
// but not yet handed to its reader, in order, and a read error that came with bytes, for
// after them. The zero value is empty. Not safe for concurrent use.
type Ready struct {
	out    []byte
	outPos int
	rerr   error
}

// Pop hands on what is ready, or then the error that came after it; ok is false when there
// is neither.
func (r *Ready) Pop(p []byte) (n int, err error, ok bool) {
	if r.outPos < len(r.out) {
		n = copy(p, r.out[r.outPos:])
		r.outPos += n
		if r.outPos == len(r.out) {
			r.out, r.outPos = r.out[:0], 0 // keep the buffer for the next message
		}
		return n, nil, true
	}
	if r.rerr != nil {
		err, r.rerr = r.rerr, nil
		return 0, err, true
	}
	return 0, nil, false
}

// After is a Read's answer once a read from the socket ended with err and k of its bytes
// may go at once (the rest was kept or refused); ok is false when there is nothing to
// answer yet, and the Read reads again.
func (r *Ready) After(k int, err error) (int, error, bool) {
	if err != nil {
		if k == 0 && r.outPos == len(r.out) {
			return 0, err, true
		}
		r.rerr = err
	}
	return k, nil, k > 0
}

// Push adds checked bytes b after those already ready.
func (r *Ready) Push(b []byte) { r.out = append(r.out, b...) }

// Len is how many checked bytes wait to be read.
func (r *Ready) Len() int { return len(r.out) - r.outPos }

// Later keeps err, a read error that came with bytes still ready, to be returned by Pop
// after them, and returns nil; with nothing ready it returns err.
func (r *Ready) Later(err error) error {
	if err != nil && r.outPos < len(r.out) {
		r.rerr = err
		return nil
	}
	return err
}
