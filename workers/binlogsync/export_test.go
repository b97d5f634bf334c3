package binlogsync

// IsPositionGone exposes the classifier of canal's errors to the tests.
var IsPositionGone = isPositionGone
