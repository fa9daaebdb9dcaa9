//! Which breakpoint sits in which register of which CPU; context switch (owner: the layer work).
