// Ring header layout. Mirrors the RING_* constants of src/shm/layout.ts, which
// is the source of truth for every offset in the shared region.
#ifndef ZIVM_LAYOUT_H
#define ZIVM_LAYOUT_H

#include <cstdint>

namespace zivm {

constexpr uint64_t RING_HEADER_SIZE = 256;
constexpr uint64_t RING_HEAD = 0;              // u64, written by the producer only
constexpr uint64_t RING_WRITER_SLEEPING = 8;   // u32
constexpr uint64_t RING_TAIL = 128;            // u64, written by the consumer only
constexpr uint64_t RING_READER_SLEEPING = 136; // u32

constexpr uint64_t RING_MIN_CAPACITY = 64;
constexpr uint64_t RING_HEADER_ALIGN = 64;
constexpr uint64_t RING_DATA_ALIGN = 8;

static_assert(RING_TAIL + 8 <= RING_HEADER_SIZE, "tail inside header");
static_assert(RING_READER_SLEEPING + 4 <= RING_HEADER_SIZE, "reader flag inside header");
static_assert(RING_HEAD % 8 == 0 && RING_TAIL % 8 == 0, "positions are 8-aligned");

}  // namespace zivm

#endif
