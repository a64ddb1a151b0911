package fleet

import "context"

// A permit says whether a context's outside calls may still be made. The
// leader's guard gives one to each of its calls; the LXD and GitHub
// clients ask it before every request they send. A context that drops its
// parent's cancellation (context.WithoutCancel, for a cleanup after the
// call failed) keeps its values, and so its permit: a leader whose lease
// may have lapsed sends nothing, whichever way a request was made.
type permitKey struct{}

// WithPermit returns ctx with a permit: requests under it (and under any
// context made from it) are refused with check's error once check returns
// one, and so are they when a permit ctx already carried refuses.
func WithPermit(ctx context.Context, check func() error) context.Context {
	if outer, ok := ctx.Value(permitKey{}).(func() error); ok {
		inner := check
		check = func() error {
			if err := outer(); err != nil {
				return err
			}
			return inner()
		}
	}
	return context.WithValue(ctx, permitKey{}, check)
}

// Permitted reports whether a request may be sent under ctx: nil when ctx
// carries no permit or its permit allows it, else the permit's error.
func Permitted(ctx context.Context) error {
	if check, ok := ctx.Value(permitKey{}).(func() error); ok {
		return check()
	}
	return nil
}
