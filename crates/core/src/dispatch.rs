//! Raw exception status → hit breakpoints → stray filter → step-over → deliver (owner: the layer work).
