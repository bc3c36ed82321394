/*
 * test_frame.c - the frame decoder accepts exactly what a task writes, and
 * refuses everything else (the fuzzer in tests/fuzz/ searches further).
 */
#include "helpers.h"

#include "internal.h"

static size_t make_frame(unsigned char *buf, enum frame_type type, int code, const char *text)
{
	size_t len = strlen(text);

	frame_encode_header(buf, type, code, len);
	memcpy(buf + FRAME_HEADER_SIZE, text, len);
	return FRAME_HEADER_SIZE + len;
}

static void test_message_frame_round_trips(void **state)
{
	unsigned char buf[64];
	size_t len = make_frame(buf, FRAME_MESSAGE, -5, "hello");
	struct frame f;
	(void)state;

	assert_int_equal(frame_decode(buf, len, &f), 0);
	assert_int_equal(f.type, FRAME_MESSAGE);
	assert_int_equal(f.code, -5);
	assert_int_equal(f.text_len, 5);
	assert_memory_equal(f.text, "hello", 5);
}

static void test_returned_frame_round_trips(void **state)
{
	unsigned char buf[64];
	size_t len = make_frame(buf, FRAME_RETURNED, 70000, "");
	struct frame f;
	(void)state;

	assert_int_equal(frame_decode(buf, len, &f), 0);
	assert_int_equal(f.type, FRAME_RETURNED);
	assert_int_equal(f.code, 70000);
}

static void test_bad_frames_are_refused(void **state)
{
	unsigned char buf[64], bad[64];
	size_t len = make_frame(buf, FRAME_MESSAGE, 1, "text");
	struct frame f;
	uint32_t huge = UINT32_MAX;
	(void)state;

	/* Too short, and one byte short of the declared length. */
	assert_int_equal(frame_decode(buf, 3, &f), -EBADMSG);
	assert_int_equal(frame_decode(buf, len - 1, &f), -EBADMSG);
	/* A length field that lies. */
	memcpy(bad, buf, len);
	memcpy(bad + 12, &huge, 4);
	assert_int_equal(frame_decode(bad, len, &f), -EBADMSG);
	/* Wrong magic, version, reserved bytes, type. */
	for (size_t at = 0; at < 8; at++) {
		memcpy(bad, buf, len);
		bad[at] ^= 0x5a;
		assert_int_equal(frame_decode(bad, len, &f), -EBADMSG);
	}
	/* A NUL inside the text. */
	memcpy(bad, buf, len);
	bad[FRAME_HEADER_SIZE + 1] = '\0';
	assert_int_equal(frame_decode(bad, len, &f), -EBADMSG);
	/* RETURNED carries no text. */
	len = make_frame(bad, FRAME_RETURNED, 1, "x");
	assert_int_equal(frame_decode(bad, len, &f), -EBADMSG);
	/* Longer than any frame may be. */
	assert_int_equal(frame_decode(buf, FRAME_MAX + 1, &f), -EBADMSG);
}

/* The marker a cut message ends with, also when vsnprintf could not
 * count the whole (EOVERFLOW past INT_MAX bytes, or a conversion that
 * failed past the limit): it had none.  Real
 * formatting of that much takes seconds, so the counts are given. */
static void test_cut_message_ends_with_the_marker(void **state)
{
	static char text[ERRGROUP_MESSAGE_MAX + FRAME_TRUNCATION_MARKER_MAX];
	const char *tail;
	size_t len;

	(void)state;
	memset(text, 'x', ERRGROUP_MESSAGE_MAX);
	text[ERRGROUP_MESSAGE_MAX] = '\0';
	len = frame_message_length(text, 70000, 0);
	tail = "[... message truncated: 70000 bytes]";
	assert_int_equal(len, ERRGROUP_MESSAGE_MAX + strlen(tail));
	assert_string_equal(text + ERRGROUP_MESSAGE_MAX, tail);

	text[ERRGROUP_MESSAGE_MAX] = '\0';
	len = frame_message_length(text, -1, EOVERFLOW);
	tail = "[... message truncated: more than 2147483647 bytes]";
	assert_int_equal(len, ERRGROUP_MESSAGE_MAX + strlen(tail));
	assert_string_equal(text + ERRGROUP_MESSAGE_MAX, tail);

	text[ERRGROUP_MESSAGE_MAX] = '\0';
	len = frame_message_length(text, -1, EILSEQ);
	tail = "[... message truncated: more than 65536 bytes]";
	assert_int_equal(len, ERRGROUP_MESSAGE_MAX + strlen(tail));
	assert_string_equal(text + ERRGROUP_MESSAGE_MAX, tail);

	/* Exactly the limit is whole; a short text that failed otherwise
	 * (EILSEQ) is what was written. */
	text[ERRGROUP_MESSAGE_MAX] = '\0';
	assert_int_equal(frame_message_length(text, ERRGROUP_MESSAGE_MAX, 0), ERRGROUP_MESSAGE_MAX);
	strcpy(text, "abc");
	assert_int_equal(frame_message_length(text, -1, EILSEQ), 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		census_test(test_message_frame_round_trips),
		census_test(test_returned_frame_round_trips),
		census_test(test_bad_frames_are_refused),
		census_test(test_cut_message_ends_with_the_marker),
	};

	census_begin();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
