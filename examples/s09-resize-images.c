/* S09: resize a batch of PNG images in parallel */
#include <mproc.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef char path_t[160];
struct size {
  int w, h;
};

/* The test pattern of input image i, so the result can be checked pixel by pixel. */
static unsigned char pattern(int i, int x, int y, int c) {
  return (unsigned char)(c == 0 ? x * 7 + i * 13 : c == 1 ? y * 5 + i : (x ^ y) * 3);
}

/* processed_<name> next to <dir>/<name> */
static void processed_path(const char *path, char *out, size_t cap) {
  const char *slash = strrchr(path, '/');
  int dirlen = (int)(slash - path);
  snprintf(out, cap, "%.*s/processed_%s", dirlen, path, slash + 1);
}

/* The task: read one image, halve it (each output pixel is the mean of a 2x2
 * block), write processed_<name>. */
static int shrink(const void *in, void *out) {
  const char *path = in;
  png_image img = {.version = PNG_IMAGE_VERSION};
  if (!png_image_begin_read_from_file(&img, path))
    return 1;
  img.format = PNG_FORMAT_RGB;
  unsigned char *src = malloc(PNG_IMAGE_SIZE(img));
  if (!src || !png_image_finish_read(&img, NULL, src, 0, NULL)) {
    free(src);
    png_image_free(&img);
    return 2;
  }
  int w = (int)img.width / 2, h = (int)img.height / 2, sw = (int)img.width;
  unsigned char *dst = malloc((size_t)w * (size_t)h * 3);
  for (int y = 0; dst && y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < 3; c++) {
        const unsigned char *p = src + ((size_t)(2 * y) * (size_t)sw + (size_t)(2 * x)) * 3 + c;
        dst[((size_t)y * (size_t)w + (size_t)x) * 3 + c] =
            (unsigned char)((p[0] + p[3] + p[sw * 3] + p[sw * 3 + 3] + 2) / 4);
      }
  free(src);
  path_t target;
  processed_path(path, target, sizeof target);
  png_image o = {.version = PNG_IMAGE_VERSION,
                 .width = (png_uint_32)w,
                 .height = (png_uint_32)h,
                 .format = PNG_FORMAT_RGB};
  int ok = dst && png_image_write_to_file(&o, target, 0, dst, 0, NULL);
  free(dst);
  *(struct size *)out = (struct size){w, h};
  return ok ? 0 : 3;
}

/* Generate input image i (w x h). */
static int make_input(const char *path, int i, int w, int h) {
  unsigned char *px = malloc((size_t)w * (size_t)h * 3);
  if (!px)
    return 0;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < 3; c++)
        px[((size_t)y * (size_t)w + (size_t)x) * 3 + c] = pattern(i, x, y, c);
  png_image img = {.version = PNG_IMAGE_VERSION,
                   .width = (png_uint_32)w,
                   .height = (png_uint_32)h,
                   .format = PNG_FORMAT_RGB};
  int ok = png_image_write_to_file(&img, path, 0, px, 0, NULL);
  free(px);
  return ok;
}

/* Read processed image i back and compare every pixel with the 2x2 means of
 * the pattern. */
static int check_output(const char *path, int i, int w, int h) {
  png_image img = {.version = PNG_IMAGE_VERSION};
  if (!png_image_begin_read_from_file(&img, path))
    return 0;
  img.format = PNG_FORMAT_RGB;
  unsigned char *px = malloc(PNG_IMAGE_SIZE(img));
  int ok = px && png_image_finish_read(&img, NULL, px, 0, NULL) && (int)img.width == w &&
           (int)img.height == h;
  for (int y = 0; ok && y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < 3; c++) {
        int sum = pattern(i, 2 * x, 2 * y, c) + pattern(i, 2 * x + 1, 2 * y, c) +
                  pattern(i, 2 * x, 2 * y + 1, c) + pattern(i, 2 * x + 1, 2 * y + 1, c);
        ok &= px[((size_t)y * (size_t)w + (size_t)x) * 3 + c] == (sum + 2) / 4;
      }
  free(px);
  png_image_free(&img);
  return ok;
}

int main(void) {
  enum { N = 8 };
  char dir[] = "/tmp/s09-XXXXXX";
  if (!mkdtemp(dir))
    return 1;
  path_t files[N];
  for (int i = 0; i < N; i++) {
    snprintf(files[i], sizeof files[i], "%s/photo%d.png", dir, i);
    if (!make_input(files[i], i, 64 + 16 * i, 48 + 8 * i))
      return 1;
  }

  /* with Pool() as pool: pool.map(shrink, files) */
  mproc_pool *pool;
  struct size sizes[N];
  struct mproc_task_error err;
  int r = mproc_pool_new(&pool, NULL);
  if (r == 0) {
    r = mproc_pool_map(pool, shrink, files, N, sizeof(path_t), sizes, sizeof(struct size),
                       &(struct mproc_map_options){.chunksize = 1}, &err, 60000);
    mproc_pool_free(pool);
  }
  if (r != 0)
    fprintf(stderr, "map: %s (item %zu: %s)\n", mproc_strerror(r), err.index, err.message);

  int ok = 0;
  for (int i = 0; i < N && r == 0; i++) {
    path_t out;
    processed_path(files[i], out, sizeof out);
    int good = check_output(out, i, (64 + 16 * i) / 2, (48 + 8 * i) / 2);
    printf("photo%d.png %dx%d -> processed_photo%d.png %dx%d %s\n", i, 64 + 16 * i, 48 + 8 * i, i,
           sizes[i].w, sizes[i].h, good ? "pixels ok" : "WRONG");
    ok += good;
    unlink(out);
  }
  for (int i = 0; i < N; i++)
    unlink(files[i]);
  rmdir(dir);
  printf("resized %d of %d images\n", ok, N);
  return ok == N ? 0 : 1;
}
