/* S09: resize a batch of PNG images in parallel, their paths of any length */
/* The images sit in a directory whose name is longer than 200 bytes:
 * mproc_pool_map_buf takes each path as an item and gives back the path of
 * the image it wrote. */
#include <mproc.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The test pattern of input image i, so the result can be checked pixel by pixel. */
static unsigned char pattern(int i, int x, int y, int c) {
  return (unsigned char)(c == 0 ? x * 7 + i * 13 : c == 1 ? y * 5 + i : (x ^ y) * 3);
}

/* processed_<name> next to <dir>/<name>, in a new string (NULL: no memory) */
static char *processed_path(const char *path) {
  const char *slash = strrchr(path, '/');
  int dirlen = (int)(slash - path);
  size_t cap = strlen(path) + sizeof "processed_";
  char *out = malloc(cap);
  if (out)
    snprintf(out, cap, "%.*s/processed_%s", dirlen, path, slash + 1);
  return out;
}

/* The task: read one image (the item is its NUL-terminated path), halve it
 * (each output pixel is the mean of a 2x2 block), write processed_<name>,
 * and hand back that file's path. */
static int shrink(const void *in, size_t len, mproc_item_ctx *ctx) {
  const char *path = in;
  if (len == 0 || path[len - 1] != '\0')
    return mproc_item_fail(ctx, 1, "a path item includes its NUL");
  png_image img = {.version = PNG_IMAGE_VERSION};
  if (!png_image_begin_read_from_file(&img, path))
    return mproc_item_fail(ctx, 1, "%s: %s", path, img.message);
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
  char *target = processed_path(path);
  png_image o = {.version = PNG_IMAGE_VERSION,
                 .width = (png_uint_32)w,
                 .height = (png_uint_32)h,
                 .format = PNG_FORMAT_RGB};
  int ok = dst && target && png_image_write_to_file(&o, target, 0, dst, 0, NULL);
  free(dst);
  int r = ok ? mproc_item_return(ctx, target, strlen(target) + 1) : 3;
  free(target);
  return r;
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
  char top[] = "/tmp/s09-XXXXXX", dir[512];
  if (!mkdtemp(top))
    return 1;
  snprintf(dir, sizeof dir, "%s/%s", top,
           "holiday-photos-from-the-summer-of-twenty-twenty-six-all-of-them-unsorted-"
           "straight-off-the-camera-card-and-waiting-to-be-made-smaller-before-anyone-"
           "emails-them-to-the-whole-family-again");
  if (mkdir(dir, 0700) != 0)
    return 1;
  char *files[N];
  struct mproc_buf items[N];
  for (int i = 0; i < N; i++) {
    size_t cap = strlen(dir) + 32;
    if (!(files[i] = malloc(cap)))
      return 1;
    snprintf(files[i], cap, "%s/photo%d.png", dir, i);
    if (!make_input(files[i], i, 64 + 16 * i, 48 + 8 * i))
      return 1;
    items[i] = (struct mproc_buf){files[i], strlen(files[i]) + 1}; /* with its NUL */
  }

  /* with Pool() as pool: pool.map(shrink, files) */
  mproc_pool *pool;
  struct mproc_buf *written = NULL;
  struct mproc_task_error err;
  int r = mproc_pool_new(&pool, NULL);
  if (r == 0) {
    r = mproc_pool_map_buf(pool, shrink, items, N, &written,
                           &(struct mproc_map_options){.chunksize = 1}, &err, 60000);
    mproc_pool_free(pool);
  }
  if (r != 0)
    fprintf(stderr, "map_buf: %s (item %zu: %s)\n", mproc_strerror(r), err.index, err.message);

  int ok = 0;
  for (int i = 0; i < N && r == 0; i++) {
    const char *out = written[i].data; /* a C string: results end with a NUL */
    int w = (64 + 16 * i) / 2, h = (48 + 8 * i) / 2;
    int good = check_output(out, i, w, h);
    printf("photo%d.png %dx%d -> %s %dx%d %s\n", i, 64 + 16 * i, 48 + 8 * i, strrchr(out, '/') + 1,
           w, h, good ? "pixels ok" : "WRONG");
    ok += good;
    unlink(out);
  }
  mproc_bufs_free(written);
  for (int i = 0; i < N; i++) {
    unlink(files[i]);
    free(files[i]);
  }
  rmdir(dir);
  rmdir(top);
  printf("resized %d of %d images\n", ok, N);
  return ok == N ? 0 : 1;
}
