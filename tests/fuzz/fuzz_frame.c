/*
 * fuzz_frame.c - libFuzzer harness for frame_decode(), the one piece of
 * the parent that parses bytes a task chose (supervisor/frame.c).
 *
 * Built by `make fuzz` with clang -fsanitize=fuzzer,address,undefined.
 * libFuzzer hands the harness a heap copy of exactly size bytes, so ASan
 * catches any read past the datagram.  Beyond not crashing, each input
 * checks two properties:
 *   - whatever the decoder accepts is a frame the encoder could have
 *     written: the header re-encodes to the same 16 bytes, the text is
 *     the rest of the datagram, NUL-free, and the type is known;
 *   - whatever text a task may send (the input, cut at its first NUL and
 *     at ERRGROUP_MESSAGE_MAX) survives encoding and decoding intact.
 * A broken property aborts, which libFuzzer reports as a crash.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: broken: %s\n", __FILE__,       \
				__LINE__, #cond);                              \
			abort();                                               \
		}                                                              \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_decoded(const uint8_t *data, size_t size)
{
	unsigned char header[FRAME_HEADER_SIZE];
	struct frame f;
	int r;

	memset(&f, 0, sizeof f);
	r = frame_decode(data, size, &f);
	CHECK(r == 0 || r == -EBADMSG);
	if (r < 0)
		return;
	CHECK(size >= FRAME_HEADER_SIZE && size <= FRAME_MAX);
	CHECK(f.type == FRAME_MESSAGE || f.type == FRAME_RETURNED);
	CHECK(f.type == FRAME_MESSAGE || f.text_len == 0);
	CHECK(f.text_len == size - FRAME_HEADER_SIZE);
	CHECK((const uint8_t *)f.text == data + FRAME_HEADER_SIZE);
	CHECK(memchr(f.text, '\0', f.text_len) == NULL);
	CHECK(frame_encode_header(header, f.type, f.code, f.text_len) == FRAME_HEADER_SIZE);
	CHECK(memcmp(header, data, FRAME_HEADER_SIZE) == 0);
}

static void check_round_trip(const uint8_t *data, size_t size)
{
	size_t text_len = strnlen((const char *)data, size < ERRGROUP_MESSAGE_MAX ? size : ERRGROUP_MESSAGE_MAX);
	unsigned char *frame = malloc(FRAME_HEADER_SIZE + text_len);
	int code = 0;
	struct frame f;

	if (!frame)
		return;
	memcpy(&code, data, size < sizeof code ? size : sizeof code);
	frame_encode_header(frame, FRAME_MESSAGE, code, text_len);
	memcpy(frame + FRAME_HEADER_SIZE, data, text_len);
	CHECK(frame_decode(frame, FRAME_HEADER_SIZE + text_len, &f) == 0);
	CHECK(f.type == FRAME_MESSAGE && f.code == code && f.text_len == text_len);
	CHECK(memcmp(f.text, data, text_len) == 0);
	free(frame);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_decoded(data, size);
	check_round_trip(data, size);
	return 0;
}
